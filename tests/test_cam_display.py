"""How a Grad-CAM map is shown (found by a review): each map is scaled to its own strongest point, so full red is
the most evidence in this film however weak; the caption says so with the model's probability for the class, and
a map with no evidence at all is said to be empty, not drawn as a uniform wash."""
from __future__ import annotations

import numpy as np
import pytest
import test_device
import torch
from bad_input_support import open_page, private_registry, upload
from conftest import REPO

from core.errors import DeviceOutOfMemory

from dashboard.components import triage_view
from dashboard.components.triage_view import cam_caption


def test_the_caption_gives_the_classs_probability_and_what_red_means():
    # a colour key, relative to the film (a Grad-CAM review: blue, green and yellow were never explained)
    assert cam_caption("Grad-CAM for NORMAL", False, 0.006) == (
        "Grad-CAM for NORMAL, which the model gives 0.6 % (colours relative to this film alone: yellow = the most "
        "evidence for it here, however weak; purple = little; no colour = none)")
    assert cam_caption("Grad-CAM for PNEUMONIA", False, 0.033, below_threshold=True) == (  # a routine film's map
        "Grad-CAM for PNEUMONIA, which the model gives 3.3 % (colours relative to this film alone: yellow = the most "
        "evidence for it here, however weak; purple = little; no colour = none). This film is below the urgent "
        "threshold: the colours show where what little evidence the model found for this class lies, not a "
        "finding.")  # a browser review: a bright spot at 3.3 % looked like a lesion found
    assert cam_caption("Grad-CAM for PNEUMONIA", False, 0.99996).startswith(
        "Grad-CAM for PNEUMONIA, which the model gives 99.99")  # never a rounded 100.0 %
    assert cam_caption("Grad-CAM for PNEUMONIA", False, 1.0).startswith(  # nor a saturated output
        "Grad-CAM for PNEUMONIA, which the model gives >99.9999 % (colours")
    assert cam_caption("Eigen-CAM, the same for every class", True, 0.5) == (
        "Eigen-CAM, the same for every class (colours relative to this film alone: yellow = the strongest "
        "activation here; purple = weak; no colour = none)")


def test_the_colour_scale_reads_for_colour_blind_eyes_and_rises_in_lightness():
    """Blue-cyan-green-yellow-red told little from much by red against green, which one man in twelve cannot
    see, and its lightness rose and fell (an accessibility review): viridis, whose lightness only rises."""
    from matplotlib import colormaps

    from core.serving.explain import colour_bar, colour_scale

    points = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    colours = colour_scale(points)
    assert np.abs(colours - colormaps["viridis"](points)[:, :3]).max() < 0.04  # 13 stops, straight between
    linear = np.where(colours <= 0.04045, colours / 12.92, ((colours + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)  # darker means less, everywhere on the scale
    bar = colour_bar(200, 8)  # as the map fades in over a film: grey where there is no evidence (a re-read)
    assert bar.shape == (8, 200, 3) and bar.dtype == np.uint8 and np.array_equal(bar[0], bar[-1])
    assert np.array_equal(bar[0, -1], np.round(255 * colours[-1]).astype(np.uint8)) and bar[0, 0].tolist() == [128] * 3


def test_an_empty_map_is_said_to_be_empty_not_drawn(trained_model, tmp_path, settings_env, normal_film_path,
                                                     monkeypatch):
    private_registry(trained_model, tmp_path, settings_env)
    monkeypatch.setattr(triage_view, "heat_map", lambda *args: np.zeros((64, 64), np.float32))
    at = open_page()
    upload(at, [(normal_film_path.name, normal_film_path.read_bytes())])
    captions = [c for image in at.get("image") for c in image.captions]
    assert not any(c.startswith("Grad-CAM for") for c in captions) and any(c.startswith("Film,") for c in captions)
    alts = [img.alt for image in at.get("image") for img in image.proto.imgs]  # for a screen reader (a review)
    assert alts and all(alt.startswith("Chest film ") and normal_film_path.stem not in alt for alt in alts)
    assert any("no part of this film raised the model's score for" in i.value and "no map to draw" in i.value
               for i in at.info), [i.value for i in at.info]


def test_grad_cam_out_of_memory_names_the_model_s_device_not_the_batch_s(monkeypatch):
    """The batch arrives on the CPU whatever the model's device: a GPU's exhaustion read "This computer" (a review)."""
    from contextlib import nullcontext

    from core.models import device
    from core.serving.explain import heat_map

    monkeypatch.setattr(device, "model_device", lambda model: torch.device("cuda"))
    monkeypatch.setattr(device, "inference_kernels", lambda *args: nullcontext())
    model = test_device._Exhausted().eval()
    with pytest.raises(DeviceOutOfMemory, match=r"^The GPU ran out of memory drawing the Grad-CAM map"):
        heat_map(model, model.conv, torch.rand(1, 1, 32, 32), 0)


def test_a_server_fault_drawing_a_map_is_said_in_its_place(trained_model, tmp_path, settings_env, normal_film_path,
                                                           monkeypatch):
    """A messages review: anything but TriageError or ValueError from the map replaced the page with Streamlit's
    bare error box; the film's reading stands, and the map's place says what happened."""
    private_registry(trained_model, tmp_path, settings_env)

    def fault(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(triage_view, "heat_map", fault)
    at = open_page()
    upload(at, [(normal_film_path.name, normal_film_path.read_bytes())])
    said = [w.value for w in at.warning]
    assert any(w.startswith("No explanation for this film: a fault on the server") for w in said), said
    assert not any("CUDA" in w for w in said) and at.get("image") and at.subheader


def test_a_routine_films_map_says_it_is_no_finding_and_an_urgent_ones_does_not(tmp_path, settings_env, normal_film_path,
                                                                              pneumonia_film_path):
    """A browser review: a routine film's map for PNEUMONIA at 3.3 % showed a bright spot like a lesion found. Said
    of routine films only: a re-read found a fixed 50 % would call the class of an urgent call at 48 % unlikely."""
    settings_env(CXR_CHECKPOINTS=str(REPO / "checkpoints"), CXR_MODELS=str(tmp_path / "site"),
                 CXR_JOBS=str(tmp_path / "jobs"))  # a shipped model that calls the normal film routine
    at = open_page()
    at.sidebar.selectbox[0].set_value("pneumonia-cnn5-v1").run()
    upload(at, [(path.name, path.read_bytes()) for path in (normal_film_path, pneumonia_film_path)])
    table = at.dataframe[0].value.set_index("File")
    priorities = {name: table.loc[name, "Priority"] for name in (normal_film_path.name, pneumonia_film_path.name)}
    assert sorted(priorities.values()) == ["Routine", "Urgent"]
    maps = [c for image in at.get("image") for c in image.captions if c.startswith("Grad-CAM for PNEUMONIA")]
    assert len(maps) == 2 and sum(c.endswith("lies, not a finding.") for c in maps) == 1
