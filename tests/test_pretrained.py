"""Every model shipped under pretrained/ loads, has the serving signatures, and
reproduces its fixed-seed reference sample; its one-line sample command works."""

import json
import os

import pytest

from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(name for name in (os.listdir(os.path.join(REPO, "pretrained"))
                                   if os.path.isdir(os.path.join(REPO, "pretrained"))
                                   else [])
                 if os.path.exists(os.path.join(REPO, "pretrained", name, "model.json")))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_reproduces_its_reference(name):
    from export import ship
    card = ship.verify(os.path.join(REPO, "pretrained", name))
    assert card["name"] == name and card["dataset"] and card["prior"]
    assert card["sample_command"].startswith("python -m export.sample")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_samples_a_png_in_one_command(name, tmp_path):
    with open(os.path.join(REPO, "pretrained", name, "model.json")) as f:
        card = json.load(f)
    out = tmp_path / "samples.png"
    args = card["sample_command"].split()[2:]
    helpers.run_module(args[0], *[a for a in args[1:] if not a.startswith("--out=")],
                       f"--out={out}")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
