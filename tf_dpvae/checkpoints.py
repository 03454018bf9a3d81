"""Restoring checkpoints, including those of the per-layer flow layout.

Until 2026-12 (revision ef95237 and before) the decoupled prior stored each s and t
MLP layer as its own Keras ``Dense`` (K blocks × 2 MLPs × (layers + 1) × (kernel,
bias) variables, 72 for the paper's flow); it now stores the blocks of one shape
stacked (:class:`tf_dpvae.flows.realnvp.CouplingNets`). :func:`restore` loads either: a
checkpoint of the current layout as it is, an older one by moving its flow values (and
their Adam moments) into the stacked variables. Nothing else changed between the two
layouts, and the old model computes exactly what the converted one does (tested on a
checkpoint written by ef95237, ``tests/data/legacy_flow_ef95237``).

:func:`restore_newest_valid` is what every command uses on a model directory: the
newest checkpoint that reads back whole, the unreadable ones skipped (and, when
training, moved aside) with a line on stderr saying which and why, and a model that
does not match its checkpoint refused (:class:`CheckpointError`).
"""

import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from tf_dpvae import checkpoint_files

_VALUE = "VARIABLE_VALUE"
_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


class CheckpointError(ValueError):
    """No usable checkpoint, or one that holds another model (a user error)."""


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


def unreadable(prefix):
    """Why the checkpoint at ``prefix`` cannot be read back whole (a short reason), or
    None. Every tensor is read, so the shards' CRC32C checksums are verified: bit
    flips, truncated or missing data files and a damaged index are all found here."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        keys = set(reader.get_variable_to_shape_map()) | {_GRAPH_KEY}
        for key in sorted(keys):
            reader.get_tensor(key)
    except Exception as error:  # noqa: BLE001 (TF raises many kinds for one cause)
        text = (getattr(error, "message", None) or str(error)).strip()
        return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"
    return None


def restore_newest_valid(checkpoint, model, model_dir, *, move_unreadable=False,
                         say=_stderr):
    """Restore the newest readable checkpoint of ``model_dir``; returns its prefix, or
    None if the directory has no checkpoint at all.

    The checkpoints are the ``ckpt-N.index`` files on disk (the state file is only
    reported when it disagrees, :mod:`tf_dpvae.checkpoint_files`). Unreadable ones are
    skipped, each with a line through ``say``; with ``move_unreadable`` (training)
    they are moved into ``corrupt/`` and the state file is rewritten from what
    remains. Raises :class:`CheckpointError` when checkpoints exist but none is
    readable, or when the newest readable one holds a different model.
    """
    problem = checkpoint_files.state_problem(model_dir)
    present = checkpoint_files.on_disk(model_dir)
    if problem:
        say(f"{problem}; using the {len(present)} checkpoint(s) found as ckpt-N.index "
            "files")
    skipped, restored = [], None
    for prefix in present:
        reason = unreadable(prefix)
        if reason is None:
            restore(checkpoint, model, prefix)
            restored = prefix
            break
        skipped.append(prefix)
        where = ""
        if move_unreadable:
            where = f"; moved to {checkpoint_files.quarantine(prefix)}"
        say(f"skipped checkpoint {prefix}: unreadable ({reason}){where}")
    if move_unreadable and (skipped or problem):
        checkpoint_files.write_state(model_dir, [p for p in present if p not in skipped])
    if restored is None and skipped:
        raise CheckpointError(
            f"--model_dir={model_dir}: none of its {len(skipped)} checkpoint(s) is "
            "readable (see above); nothing was restored. To start over, use a new "
            "--model_dir")
    return restored


def restore(checkpoint, model, path):
    """Restore ``checkpoint`` (a ``tf.train.Checkpoint`` of ``model``, its optimizer
    and the objective's) from ``path``.

    Every object saved in the checkpoint must find its place in the model and every
    variable of the model must get a value (``assert_consumed``); otherwise the
    checkpoint is of another model and :class:`CheckpointError` says so (the legacy
    flow layout is converted instead).
    """
    reader = tf.train.load_checkpoint(path)
    lists = _optimizer_lists(reader) if getattr(model.prior, "is_decoupled", False) else None
    if _is_per_layer_flow(lists, model):
        _restore_per_layer_flow(reader, lists, model, path)
        return
    status = checkpoint.restore(path)
    try:
        status.assert_consumed()
    except AssertionError as error:
        status.expect_partial()
        first = str(error).splitlines()[0][:300]
        raise CheckpointError(
            f"{path} holds a different model than the one configured ({first}); "
            "check that config.json and the flags describe the model that was "
            "trained there") from None


def _graph(reader):
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return graph


def _child(graph, node_id, name):
    for child in graph.nodes[node_id].children:
        if child.local_name == name:
            return child.node_id
    return None


def _list_keys(graph, node_id):
    """Checkpoint keys of the variables in a tracked list node, in list order."""
    nodes = [graph.nodes[c.node_id] for c in sorted(graph.nodes[node_id].children,
                                                    key=lambda c: int(c.local_name))]
    return [next(a.checkpoint_key for a in n.attributes if a.name == _VALUE) for n in nodes]


def _optimizer_lists(reader):
    """{list name: [checkpoint keys]} of the VAE optimizer's variable lists."""
    graph = _graph(reader)
    optimizer = _child(graph, 0, "optimizer")
    if optimizer is None:
        return None
    lists = {}
    for name in ("_trainable_variables", "_momentums", "_velocities"):
        node = _child(graph, optimizer, name)
        if node is None:
            return None
        lists[name] = _list_keys(graph, node)
    return lists


def _flow_range(model):
    """(start, count) of the flow's variables in the optimizer's variable list."""
    ids = [id(v) for v in model.optimizer._trainable_variables]
    flow = [ids.index(id(v)) for v in model.prior.trainable_variables]
    if not flow or flow != list(range(flow[0], flow[0] + len(flow))):
        return None
    return flow[0], len(flow)


def _old_count(model):
    if getattr(model.prior.flow, "name_", None) != "realnvp":
        return 0
    nets = getattr(model.prior, "nets", [])
    return sum(net.num_blocks * 2 * (len(net.dims) - 1) * 2 for net in nets)


def _is_per_layer_flow(lists, model):
    """Whether the saved optimizer lists (:func:`_optimizer_lists`) hold the flow per
    layer: as many more variables as the per-layer layout has over the stacked one."""
    if not getattr(model.prior, "is_decoupled", False) or not _old_count(model):
        return False
    span = _flow_range(model)
    if lists is None or span is None:
        return False
    saved = len(lists["_trainable_variables"])
    now = len(model.optimizer._trainable_variables)
    return saved != now and saved - _old_count(model) == now - span[1]


def _restore_per_layer_flow(reader, lists, model, path):
    """Everything but the VAE optimizer's lists by the object graph; the optimizer's
    variables and moments by position, the flow's stacked from its per-layer values."""
    start, count = _flow_range(model)
    old = _old_count(model)
    # 1. The networks (their own tracked paths) and the objective's optimizers through
    #    the object graph; the VAE optimizer's lists (positional) are set below.
    networks = {name: getattr(model, name) for name in ("encoder", "decoder", "likelihood")}
    networks.update(model.objective.networks)
    tf.train.Checkpoint(model=tf.train.Checkpoint(**networks),
                        **model.objective.optimizers).restore(path).expect_partial()
    optimizer = model.optimizer
    slots = {"_trainable_variables": optimizer._trainable_variables,
             "_momentums": optimizer._momentums, "_velocities": optimizer._velocities}
    for name, variables in slots.items():
        keys = lists[name]
        for i, variable in enumerate(variables):
            if i < start:
                variable.assign(reader.get_tensor(keys[i]))
            elif i >= start + count:
                variable.assign(reader.get_tensor(keys[i - count + old]))
        values = _stacked_values(model.prior,
                                 [reader.get_tensor(k) for k in keys[start:start + old]])
        for j in range(count):
            variables[start + j].assign(
                values[id(optimizer._trainable_variables[start + j])])
    for name in ("_iterations", "_learning_rate"):
        key = f"optimizer/{name}/.ATTRIBUTES/{_VALUE}"
        variable = getattr(optimizer, name, None)
        if reader.has_tensor(key) and hasattr(variable, "assign"):
            variable.assign(reader.get_tensor(key))


def _stacked_values(prior, per_layer):
    """{id(stacked variable): array} from the per-layer arrays (block-major; per block
    the shift MLP's (kernel, bias) per layer, then the log-scale MLP's)."""
    layers = len(prior.nets[0].dims) - 1
    per_block = 2 * layers * 2
    targets = {}
    for net in prior.nets:
        for kernel, bias in zip(net.kernels, net.biases):
            targets[id(kernel)] = np.zeros(kernel.shape, kernel.dtype)
            targets[id(bias)] = np.zeros(bias.shape, bias.dtype)
    for k in range(len(prior.flow.masks)):
        group, index = prior.flow._slot[k]
        net = prior.nets[group]
        for which in range(2):                       # 0 = shift, 1 = log-scale
            for layer in range(layers):
                base = k * per_block + which * 2 * layers + 2 * layer
                targets[id(net.kernels[layer])][index, which] = per_layer[base]
                targets[id(net.biases[layer])][index, which, 0] = per_layer[base + 1]
    return targets
