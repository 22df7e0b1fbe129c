import pytest
import torch
from safetensors.torch import save_file

from anivision.embeddings import model_fingerprint
from anivision.errors import AnivisionError
from anivision.models.backbone import LITE0_ARCH, LITE0_WEIGHTS, create_backbone, data_config

from conftest import TINY_CNN


def test_offline_lite0_weights_load_and_differ_from_random():
    m = create_backbone(LITE0_ARCH, LITE0_WEIGHTS)
    r = create_backbone(LITE0_ARCH, "none")
    assert m.num_features == 1280
    assert model_fingerprint(m) != model_fingerprint(r)
    # ImageNet-trained BN statistics are not the init values (0 mean / 1 var).
    assert float(m.bn1.running_var.mean()) != pytest.approx(1.0)
    cfg = data_config(m, 128)
    assert cfg.img_size == 128 and cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        assert m.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)


def test_vanilla_cnn_is_a_backbone():
    m = create_backbone("vanilla_cnn", "none")
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, m.num_features)


def test_unknown_backbone_and_wrong_weights(tmp_path):
    with pytest.raises(AnivisionError, match="unknown backbone 'resnet_nope'"):
        create_backbone("resnet_nope", "none")
    with pytest.raises(AnivisionError, match="fits only"):
        create_backbone(TINY_CNN, LITE0_WEIGHTS)
    with pytest.raises(AnivisionError, match="not found"):
        create_backbone(TINY_CNN, str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    save_file({"conv_stem.weight": torch.zeros(1, 1, 1, 1)}, str(bad))
    with pytest.raises(AnivisionError, match="do not fit"):
        create_backbone(TINY_CNN, str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(AnivisionError, match="cannot read weights"):
        create_backbone(TINY_CNN, str(junk))


def test_local_weights_roundtrip(tmp_path):
    a = create_backbone(TINY_CNN, "none")
    f = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(f))
    b = create_backbone(TINY_CNN, str(f))
    assert model_fingerprint(a) == model_fingerprint(b)
    p = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in a.state_dict().items()}}, p)
    c = create_backbone(TINY_CNN, str(p))
    assert model_fingerprint(a) == model_fingerprint(c)


def test_vit_built_for_the_input_size_and_weights_resampled(tmp_path):
    a = create_backbone("test_vit", "none")  # test_vit's native input is 160 px
    f = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(f))
    b = create_backbone("test_vit", str(f), img_size=32)
    with torch.no_grad():
        assert b(torch.zeros(2, 3, 32, 32)).shape == (2, b.num_features)
    assert b.pos_embed.shape[1] < a.pos_embed.shape[1]  # a smaller grid, resampled from the file
