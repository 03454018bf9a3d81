"""The data flags, defined once for every command-line entry point (light: no
TensorFlow import, so a CLI can check its flags before loading anything)."""

import os

from absl import flags

from tf_dpvae import datasets


def define(flag_values=flags.FLAGS, dataset_default="moons", dataset_help="Training data.",
           names=None):
    """``--dataset`` (unless ``dataset_default is False``), ``--data_dir`` and
    ``--data_source``; the choices come from tf_dpvae/datasets.py (``names`` restricts
    ``--dataset``)."""
    if dataset_default is not False:
        names = list(names or datasets.names())
        described = "; ".join(f"{n}: {datasets.get(n).splits}" for n in names
                              if datasets.get(n).splits)
        flags.DEFINE_enum("dataset", dataset_default, names,
                          f"{dataset_help} Splits — {described}.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "Directory of the data (tfds data_dir, or IDX "
                        "files for fashion_mnist).", flag_values=flag_values)
    flags.DEFINE_enum("data_source", "auto", list(datasets.all_sources()),
                      "Where to read the data from; auto never downloads (which sources "
                      "a dataset accepts: tf_dpvae/datasets.py).", flag_values=flag_values)


def check_data_dir(flag_values=flags.FLAGS):
    """ValueError naming the flag when --data_dir is not a directory."""
    data_dir = flag_values.data_dir
    if data_dir is not None and not os.path.isdir(data_dir):
        raise ValueError(f"--data_dir={data_dir}: no such directory")
