"""Published self-supervised checkpoints as the project's encoder + projector.

Researchers start from released weights; this module reads the files they have — without
unpickling anything but tensors and plain containers (the file is read by
:func:`oacl.io.checkpoint.read_torch_file`, ``torch.load(weights_only=True)``) — and rebuilds
the two modules ContraCAM and the evaluations use: a torchvision ResNet with ``fc = Identity``
((B, 3, H, W) → (B, C)) and the projection head it was trained with ((B, C) → (B, D)).

Layouts (registry :data:`LAYOUTS`, tried in this order; keys after dropping the DDP /
``torch.compile`` prefixes ``module.`` / ``_orig_mod.``; the weights are read from
``state_dict`` (or ``model`` / ``model_state_dict``) or from the file itself when it is a flat
dict of tensors):

- ``moco`` — facebookresearch/moco ``main_moco.py`` (v1 / v2): ``encoder_q.*``, the head as
  ``encoder_q.fc.*`` (v2: ``fc.0`` / ``fc.2``, Linear-ReLU-Linear, no BN; v1: one Linear); also
  facebookresearch/moco-v3 ResNets (``base_encoder.*``, head ``base_encoder.fc.*``). Not
  loaded: ``encoder_k.*`` / ``momentum_encoder.*``, ``queue``, ``predictor.*``. The file's
  ``arch`` entry is checked against the weights.
- ``object-aware-contrastive`` — the paper's official code (alinlab/object-aware-contrastive,
  PyTorch Lightning ``MoCo`` / ``BYOL``): ``encoder.*`` and ``projector.*`` (Linear without
  bias - BN - ReLU - Linear; its trailing L2 normalisation has no weights), next to momentum
  copies ``_encoder.*`` / ``_projector.*``, ``queue`` (MoCo) or ``predictor.*`` (BYOL); the
  ``arch`` and ``image_size`` of ``hyper_parameters`` are checked against the weights (32 px:
  a 3×3 stride-1 conv1 without max-pool). Keys on: ``encoder.conv1.weight`` without solo-learn's
  ``momentum_encoder.*`` / ``classifier.*``.
- ``solo-learn`` — ``backbone.*`` (older releases: ``encoder.*``) with ``projector.*``,
  ``momentum_backbone.*`` (``momentum_encoder.*``) or the online ``classifier.*``; a 3×3
  conv1 is solo-learn's CIFAR stem, padding 2.
- ``lightly`` — ``backbone.*`` with lightly's ``projection_head.layers.*`` (or no head);
  the backbone in torchvision names or as ``nn.Sequential(*list(resnet.children())[:-1])``
  (``backbone.0.weight`` = conv1, ``backbone.4.*`` = layer1, …).
- ``torchvision`` — a plain ResNet state dict (``conv1.weight``, ``layer1.*``, optional ``fc``
  classifier), or the same ``nn.Sequential`` of its children: backbone only.

Architecture and widths are read from the tensors (block type, blocks per stage, bottleneck
width: resnet18 / resnet50 are built, any other ResNet is named and refused) and every tensor
must have the shape of the rebuilt module. A head is rebuilt layer by layer from its keys:
2-D ``weight`` → Linear (bias if present), ``running_mean`` → BatchNorm1d (affine if it has a
``weight``), and a numbered slot without weights between two layers → ReLU (the
non-linearity of every head above). What was loaded and what was left out are logged, one
line each.

Real Lightning checkpoints usually also pickle Python objects (the paper's code stores its
Kornia augmentation module in ``hyper_parameters``; PyTorch Lightning < 1.5 keys callback
states by class; solo-learn stores an OmegaConf config): a weights-only load refuses them, and
:func:`oacl.io.checkpoint.read_torch_file` says how to keep only the ``state_dict``.

Size: five published layouts share one reconstruction of the ResNet and its head from tensor shapes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torchvision
from torch import Tensor, nn

from oacl.errors import CheckpointError
from oacl.io.checkpoint import (
    check_backbone,
    clean_state_dict,
    encoder_of,
    is_oacl_file,
    projector_of,
    read_torch_file,
)
from oacl.models.backbones import ARCHS, build_backbone, feature_dim
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "LAYOUTS",
    "Layout",
    "LoadedModel",
    "describe_head",
    "load_model",
    "published_model",
    "resnet_arch",
]

log = logging.getLogger(__name__)

_CONTAINERS = ("state_dict", "model", "model_state_dict")
# children of a torchvision ResNet, in order: nn.Sequential(*list(resnet.children())[:-1]) numbers them
_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
# (bottleneck blocks?, blocks per stage, wide bottlenecks?) -> torchvision name
_RESNETS: dict[tuple[bool, tuple[int, ...], bool], str] = {
    (False, (2, 2, 2, 2), False): "resnet18",
    (False, (3, 4, 6, 3), False): "resnet34",
    (True, (3, 4, 6, 3), False): "resnet50",
    (True, (3, 4, 23, 3), False): "resnet101",
    (True, (3, 8, 36, 3), False): "resnet152",
    (True, (3, 4, 6, 3), True): "wide_resnet50_2",
    (True, (3, 4, 23, 3), True): "wide_resnet101_2",
}
_STEM_OF_KERNEL = {7: "standard", 3: "cifar"}  # conv1 kernel -> stem of oacl.models.backbones
_STEM_OF_SIZE = {32: "cifar", 224: "standard"}  # the paper's code: image_size -> stem


# ----------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """Where a checkpoint keeps each part (key prefixes of its cleaned state dict) and what it records.

    ``head`` / ``classifier`` are ``None`` when the file has none; ``conv1_padding`` is the
    padding of a 3×3 stem (solo-learn: 2); ``method`` / ``arch`` / ``image_size`` are what the
    file says (``None``: it does not say).
    """

    source: str
    encoder: str
    head: str | None = None
    classifier: str | None = None
    conv1_padding: int = 1
    method: str | None = None
    arch: str | None = None
    image_size: int | None = None


def _has_prefix(state: Mapping[str, Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def _has_resnet(state: Mapping[str, Tensor], prefix: str) -> bool:
    """A ResNet under ``prefix``: torchvision names or the numbered children of ``nn.Sequential``."""
    return f"{prefix}conv1.weight" in state or (f"{prefix}0.weight" in state and f"{prefix}4.0.conv1.weight" in state)


def _hparams(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    hp = meta.get("hyper_parameters")
    return hp if isinstance(hp, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _moco(state: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Layout | None:
    """facebookresearch/moco (``encoder_q``) and moco-v3 (``base_encoder``)."""
    for prefix, source in (("encoder_q.", "facebookresearch/moco"), ("base_encoder.", "facebookresearch/moco-v3")):
        if _has_resnet(state, prefix):
            head = f"{prefix}fc." if _has_prefix(state, f"{prefix}fc.") else None
            return Layout(source, prefix, head, method="moco", arch=_text(meta.get("arch")))
    return None


def _paper(state: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Layout | None:
    """alinlab/object-aware-contrastive: Lightning ``MoCo`` / ``BYOL`` (``encoder``, ``_encoder``, ``projector``)."""
    if not _has_resnet(state, "encoder.") or _has_prefix(state, "momentum_encoder.") or "classifier.weight" in state:
        return None
    hp = _hparams(meta)
    method = "moco" if "queue" in state else "byol" if _has_prefix(state, "predictor.") else None
    head = "projector." if _has_prefix(state, "projector.") else None
    return Layout(
        "object-aware-contrastive",
        "encoder.",
        head,
        method=method,
        arch=_text(hp.get("arch")),
        image_size=_int(hp.get("image_size")),
    )


def _solo(state: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Layout | None:
    """solo-learn: ``backbone`` (old releases ``encoder``) + ``projector`` / momentum copy / online classifier."""
    hp = _hparams(meta)
    cfg = hp.get("cfg") if isinstance(hp.get("cfg"), Mapping) else hp
    backbone = cfg.get("backbone") if isinstance(cfg.get("backbone"), Mapping) else {}
    for prefix, momentum in (("backbone.", "momentum_backbone."), ("encoder.", "momentum_encoder.")):
        if _has_resnet(state, prefix) and (
            _has_prefix(state, momentum) or _has_prefix(state, "projector.") or "classifier.weight" in state
        ):
            return Layout(
                "solo-learn",
                prefix,
                "projector." if _has_prefix(state, "projector.") else None,
                "classifier." if "classifier.weight" in state else None,
                conv1_padding=2,
                method=_text(cfg.get("method")),
                arch=_text(backbone.get("name")) or _text(hp.get("encoder")),
            )
    return None


def _lightly(state: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Layout | None:
    """lightly: ``backbone`` (+ ``projection_head.layers``)."""
    if not _has_resnet(state, "backbone."):
        return None
    head = "projection_head.layers." if _has_prefix(state, "projection_head.layers.") else None
    return Layout("lightly", "backbone.", head)


def _torchvision(state: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Layout | None:
    """A plain ResNet state dict (torchvision names, optional ``fc`` classifier), or its children as a Sequential."""
    if not _has_resnet(state, ""):
        return None
    return Layout("torchvision", "", classifier="fc." if "fc.weight" in state else None)


# Tried in order; the first match wins (the more specific layouts first).
LAYOUTS: dict[str, Callable[[Mapping[str, Tensor], Mapping[str, Any]], Layout | None]] = {
    "moco": _moco,
    "object-aware-contrastive": _paper,
    "solo-learn": _solo,
    "lightly": _lightly,
    "torchvision": _torchvision,
}


# ----------------------------------------------------------------------------- the model


@dataclass
class LoadedModel:
    """A checkpoint rebuilt as the project's modules (CPU, eval mode).

    encoder: torchvision ResNet, ``fc = Identity``, (B, 3, H, W) → (B, C); projector: the
    projection head (B, C) → (B, D), or ``None`` (backbone-only file); classifier: a linear
    classifier on the pooled features (B, C) → (B, classes) when the file has one
    (torchvision's ``fc``, solo-learn's online classifier) — what the classifier CAM
    (:func:`oacl.cam.classifier_cam`) needs. ``image_size``: the side the file says the model was
    trained on (``None``: it does not say); ``mean`` / ``std``: the input normalisation.
    """

    source: str
    path: Path
    arch: str
    stem: str
    method: str | None
    encoder: torchvision.models.ResNet
    projector: nn.Sequential | None
    classifier: nn.Linear | None = None
    image_size: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def encoder_projector(self) -> tuple[torchvision.models.ResNet, nn.Sequential]:
        """(encoder, projector); :class:`CheckpointError` when the file has no projection head."""
        if self.projector is None:
            hint = (
                f"; for its supervised classifier use the classifier CAM: oacl.cam.classifier_cam(encoder, "
                f"oacl.io.published.load_model({str(self.path)!r}).classifier, images)"
                if self.classifier is not None
                else ""
            )
            raise CheckpointError(
                f"checkpoint {self.path} ({self.source}) holds a {self.arch} backbone without a projection head, "
                "which ContraCAM's contrastive score needs: use a checkpoint saved with the head it was trained "
                f"with (facebookresearch/moco, the paper's code, solo-learn, lightly){hint}"
            )
        return self.encoder, self.projector


def _weights(obj: Any, path: Path) -> tuple[dict[str, Tensor], Mapping[str, Any]]:
    """(cleaned state dict of tensors, the mapping holding it) of a loaded checkpoint."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)"
        )
    meta: Mapping[str, Any] = obj
    state: Any = obj
    for key in _CONTAINERS:
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(
            f"checkpoint {path} holds no tensors (entries: {', '.join(map(str, list(state)[:8]))}); "
            f"expected a state dict, alone or under one of {', '.join(_CONTAINERS)}"
        )
    return clean_state_dict(tensors), meta


def resnet_arch(state: Mapping[str, Tensor]) -> str:
    """The torchvision name of the ResNet whose (torchvision-named) weights are ``state``, read from tensor shapes.

    Block type (``layer1.0.conv3`` = bottleneck), blocks per stage and bottleneck width
    (``layer1.0.conv1`` out-channels 128 = wide). ``ValueError`` when it is none of them.
    """
    if "layer1.0.conv1.weight" not in state:
        raise ValueError("no layer1.0.conv1.weight: not a ResNet")
    bottleneck = "layer1.0.conv3.weight" in state
    depths = []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        depths.append(max(blocks) + 1 if blocks else 0)
    wide = bottleneck and state["layer1.0.conv1.weight"].shape[0] == 128
    key = (bottleneck, tuple(depths), wide)
    if key not in _RESNETS:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(f"a ResNet of {kind} blocks {tuple(depths)} that torchvision does not define")
    return _RESNETS[key]


def _encoder_state(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The encoder's weights in torchvision names (``fc`` dropped: a head or a classifier, never the encoder's)."""
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if "4.0.conv1.weight" in out and "conv1.weight" not in out:  # nn.Sequential(*children[:-1])
        renamed = {}
        for key, value in out.items():
            index, _, rest = key.partition(".")
            if not index.isdigit() or int(index) >= len(_CHILDREN):
                renamed[key] = value  # reported as unexpected by _fit
            else:
                renamed[f"{_CHILDREN[int(index)]}.{rest}"] = value
        out = renamed
    return {k: v for k, v in out.items() if not k.startswith("fc.")}


def _fit(module: nn.Module, state: Mapping[str, Tensor], what: str, path: Path, source: str) -> None:
    """Load ``state`` into ``module`` after checking that every key and shape matches (one-line error if not).

    A missing ``num_batches_tracked`` (checkpoints older than PyTorch 0.4.1) is not an error.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for name, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", wrong)):
        if items:
            problems.append(f"{len(items)} {name}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{what} weights in {path} ({source}) do not fit: {'; '.join(problems)}")
    module.load_state_dict(dict(state), strict=False)  # only num_batches_tracked may be absent (checked above)


def _head_layers(state: Mapping[str, Tensor], in_dim: int, path: Path, source: str) -> nn.Sequential:
    """A head rebuilt from its weights (keys ``<index>.<param>``; a lone Linear as ``weight`` / ``bias``).

    Each layer's input width must be the previous layer's output width, the first Linear's the
    encoder's feature width ``in_dim``.
    """
    if set(state) <= {"weight", "bias"}:
        state = {f"0.{k}": v for k, v in state.items()}
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        index, _, param = key.partition(".")
        if not index.isdigit() or not param or "." in param:
            raise CheckpointError(f"projector weights in {path} ({source}): unsupported head layout (key {key!r})")
        slots.setdefault(int(index), {})[param] = value
    layers: list[nn.Module] = []
    width, width_from = in_dim, "the encoder"
    for i in range(max(slots) + 1):
        p = slots.get(i)
        if p is None:  # a slot without weights between two layers: the head's non-linearity
            layers.append(nn.ReLU(inplace=True))
            continue
        if "running_mean" in p:
            n_in = n_out = int(p["running_mean"].shape[0])
            layers.append(nn.BatchNorm1d(n_out, affine="weight" in p))
        elif "weight" in p and p["weight"].dim() == 2:
            n_out, n_in = (int(s) for s in p["weight"].shape)
            layers.append(nn.Linear(n_in, n_out, bias="bias" in p))
        else:
            raise CheckpointError(
                f"projector weights in {path} ({source}): layer {i} ({', '.join(sorted(p))}) is neither Linear nor "
                "BatchNorm1d"
            )
        if n_in != width:
            raise CheckpointError(
                f"projector weights in {path} ({source}): layer {i} takes {n_in} features, {width_from} gives {width}"
            )
        width, width_from = n_out, f"layer {i}"
    if not any(isinstance(m, nn.Linear) for m in layers):
        raise CheckpointError(f"projector weights in {path} ({source}) hold no Linear layer")
    head = nn.Sequential(*layers)
    _fit(head, {f"{i}.{k}": v for i, p in slots.items() for k, v in p.items()}, "projector", path, source)
    return head


def describe_head(head: nn.Sequential) -> str:
    """A head in one line, e.g. ``Linear(2048>2048)-ReLU-Linear(2048>128)``."""
    parts = []
    for m in head:
        if isinstance(m, nn.Linear):
            parts.append(f"Linear({m.in_features}>{m.out_features}{'' if m.bias is not None else ', no bias'})")
        elif isinstance(m, nn.BatchNorm1d):
            parts.append("BN" if m.affine else "BN(no affine)")
        else:
            parts.append(type(m).__name__)
    return "-".join(parts)


def _left_out(state: Mapping[str, Tensor], used: set[str]) -> str:
    """The keys not loaded, grouped by their first name: ``_encoder.* (122), queue (1)``."""
    groups: dict[str, int] = {}
    for key in state:
        if key not in used:
            top, dot, _ = key.partition(".")
            name = f"{top}.*" if dot else top
            groups[name] = groups.get(name, 0) + 1
    return ", ".join(f"{k} ({n})" for k, n in groups.items()) or "nothing"


def _check_recorded(layout: Layout, arch: str, stem: str, path: Path) -> None:
    if layout.arch is not None and layout.arch != arch:
        raise CheckpointError(
            f"checkpoint {path} ({layout.source}) says its architecture is {layout.arch!r}, but its weights are a {arch}"
        )
    if layout.image_size in _STEM_OF_SIZE and _STEM_OF_SIZE[layout.image_size] != stem:
        raise CheckpointError(
            f"checkpoint {path} ({layout.source}) says image_size {layout.image_size} "
            f"({_STEM_OF_SIZE[layout.image_size]} stem), but its conv1 is the {stem} stem's"
        )


def published_model(obj: Any, path: str | Path, *, method: str | None = None, arch: str | None = None) -> LoadedModel:
    """Rebuild a published checkpoint (``obj``: the file at ``path`` as read by ``read_torch_file``).

    ``method`` / ``arch``, when given, must match what the file holds (a file that does not say
    which method trained it passes any ``method``). Raises :class:`CheckpointError` naming the
    file on an unknown layout, another architecture, weights of the wrong shape or a head that
    does not fit the encoder. Logs what was loaded and what was not, one line each.
    """
    path = Path(path)
    state, meta = _weights(obj, path)
    layout = next((found for detect in LAYOUTS.values() if (found := detect(state, meta)) is not None), None)
    if layout is None:
        keys = ", ".join(list(state)[:6])
        raise CheckpointError(
            f"checkpoint {path} is neither an oacl backbone nor a layout this code knows ({', '.join(LAYOUTS)}): "
            f"no ResNet weights found (first keys: {keys})"
        )
    enc_state = _encoder_state(state, layout.encoder)
    try:
        found = resnet_arch(enc_state)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path} ({layout.source}): the encoder is {err}") from None
    if found not in ARCHS:
        raise CheckpointError(
            f"checkpoint {path} ({layout.source}) holds a {found}; this project builds {', '.join(sorted(ARCHS))}"
        )
    if arch is not None and found != arch:
        raise CheckpointError(f"checkpoint {path} ({layout.source}) holds architecture {found!r}, expected {arch!r}")
    if method is not None and layout.method is not None and layout.method != method:
        raise CheckpointError(
            f"checkpoint {path} ({layout.source}) was trained with method {layout.method!r}, expected {method!r}"
        )
    conv1 = enc_state.get("conv1.weight")
    if conv1 is None or conv1.dim() != 4 or conv1.shape[1] != 3 or conv1.shape[2] not in _STEM_OF_KERNEL:
        shape = None if conv1 is None else tuple(conv1.shape)
        raise CheckpointError(
            f"checkpoint {path} ({layout.source}): conv1 weight {shape} is neither the 7x7 ImageNet stem nor a 3x3 "
            "CIFAR stem on RGB input"
        )
    stem = _STEM_OF_KERNEL[int(conv1.shape[2])]
    _check_recorded(layout, found, stem, path)

    encoder = build_backbone(found, stem)
    if stem == "cifar":
        encoder.conv1.padding = (layout.conv1_padding, layout.conv1_padding)
    _fit(encoder, enc_state, "encoder", path, layout.source)
    used = {k for k in state if k.startswith(layout.encoder) and not k[len(layout.encoder) :].startswith("fc.")}
    projector = classifier = None
    if layout.head is not None:
        head_state = {k[len(layout.head) :]: v for k, v in state.items() if k.startswith(layout.head)}
        projector = _head_layers(head_state, feature_dim(found), path, layout.source).eval()
        used |= {layout.head + k for k in head_state}
    if layout.classifier is not None:
        cls_state = {k[len(layout.classifier) :]: v for k, v in state.items() if k.startswith(layout.classifier)}
        weight = cls_state.get("weight")
        if weight is not None and weight.dim() == 2 and weight.shape[1] == feature_dim(found):
            classifier = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias="bias" in cls_state)
            _fit(classifier, cls_state, "classifier", path, layout.source)
            classifier.eval()
            used |= {layout.classifier + k for k in cls_state}

    head = describe_head(projector) if projector is not None else "no projector"
    extra = f", classifier {classifier.in_features}>{classifier.out_features}" if classifier is not None else ""
    pad = f", conv1 padding {layout.conv1_padding}" if stem == "cifar" else ""
    log.info(
        "loaded %s (%s%s): %s encoder (%s stem%s, %d tensors), %s%s",
        path,
        layout.source,
        f", {layout.method}" if layout.method else "",
        found,
        stem,
        pad,
        len(enc_state),
        head,
        extra,
    )
    missing = "" if projector is not None else "; missing: projection head (ContraCAM needs one)"
    log.info("not loaded from %s: %s%s", path, _left_out(state, used), missing)
    return LoadedModel(
        source=layout.source,
        path=path,
        arch=found,
        stem=stem,
        method=layout.method,
        encoder=encoder.eval(),
        projector=projector,
        classifier=classifier,
        image_size=layout.image_size,
    )


def load_model(path: str | Path, *, method: str | None = None, arch: str | None = None) -> LoadedModel:
    """Any model file this project reads — its own exported backbone or a published checkpoint — rebuilt.

    The project's ``backbone.pt`` (``format`` ``oacl.backbone/1``) keeps its recorded
    ``image_size``, ``mean`` / ``std`` and source ``"oacl"``; a published checkpoint goes through
    :func:`published_model`. ``method`` / ``arch``: as there.
    """
    path = Path(path)
    obj = read_torch_file(path)
    if not is_oacl_file(obj):
        return published_model(obj, path, method=method, arch=arch)
    info = check_backbone(obj, path, method=method, arch=arch)
    return LoadedModel(
        source="oacl",
        path=path,
        arch=info["arch"],
        stem=info["stem"],
        method=info["method"],
        encoder=encoder_of(info, path),
        projector=projector_of(info, path),
        image_size=int(info.get("image_size") or 0) or None,
        mean=tuple(info.get("mean") or IMAGENET_MEAN),
        std=tuple(info.get("std") or IMAGENET_STD),
    )
