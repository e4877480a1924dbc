"""PoseC3D (ResNet3dSlowOnly-50) on joint or limb heatmaps, aligned to CLIP text embeddings.

As mmaction2's PoseC3D config that the MiGA 2024 paper builds on (DESIGN.md,
"The MiGA 2024 model"): a stem Conv(1,7,7) stride 1 + BN + ReLU, a (1,3,3)
max pool with stride 1, then three stages of (4, 6, 3) bottlenecks (expansion 4;
planes 32, 64, 128 from base 32) with spatial strides (2, 2, 2), temporal
strides (1, 1, 2) and inflation (0, 1, 1): an inflated bottleneck's first
convolution is (3,1,1), the second is always (1,3,3) and carries the stride
('pytorch' style). 48x56x56 heatmaps give 512 x 24x7x7 features. The last BN
of every residual branch starts at zero (mmaction2's ``zero_init_residual``).

Head: global average pool, dropout 0.5, then

- without text alignment (``text_dim = 0``): FC -> logits;
- with text alignment (the MiGA'23 winner's embedding loss, the seed's CLIP
  text): ``x = W_p pool`` projects into the CLIP text-embedding space, FC(x)
  -> logits, and the loss adds ``gamma * mean_b ||x_b - z_{y_b}||^2`` (squared
  Euclidean distance, averaged over the batch; the paper's Eq. 6) with z the
  class's normalised, prompt-averaged text embedding of the trained RGB
  student (:meth:`set_text_targets`, from ``VClipStudent.class_text_embeddings``).

``forward(heatmaps (B, C, T, H, W)) -> logits (B, classes)``: plain tensors, any
H = W (56 in training, 64 at test).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from microgesture.core.errors import MicrogestureError
from microgesture.core.miga24_config import PoseC3DConfig


def _conv_bn(cin: int, cout: int, kernel, stride=1, padding=0, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm3d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class Bottleneck3d(nn.Module):
    """1x1x1 (or 3x1x1 inflated) -> 1x3x3 strided -> 1x1x1 to ``4 * planes``, plus a shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int, temporal_stride: int, inflate: bool):
        super().__init__()
        stride = (temporal_stride, spatial_stride, spatial_stride)
        first = ((3, 1, 1), (1, 0, 0)) if inflate else ((1, 1, 1), 0)
        self.conv1 = _conv_bn(inplanes, planes, first[0], 1, first[1])
        self.conv2 = _conv_bn(planes, planes, (1, 3, 3), stride, (0, 1, 1))
        self.conv3 = _conv_bn(planes, planes * self.expansion, 1, relu=False)
        nn.init.zeros_(self.conv3[1].weight)
        out = planes * self.expansion
        self.downsample = (_conv_bn(inplanes, out, 1, stride, relu=False)
                           if inplanes != out or stride != (1, 1, 1) else None)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class SlowOnly3d(nn.Module):
    """ResNet3dSlowOnly backbone: heatmaps (B, C, T, H, W) -> features (B, 4 * base * 2^(stages-1), T', H', W')."""

    def __init__(self, cfg: PoseC3DConfig):
        super().__init__()
        base = cfg.base_channels
        self.stem = _conv_bn(cfg.in_channels, base, (1, 7, 7), 1, (0, 3, 3))
        self.pool = nn.MaxPool3d((1, 3, 3), stride=1, padding=(0, 1, 1))
        stages, inplanes = [], base
        for i, (blocks, s, t, inflate) in enumerate(zip(cfg.stage_blocks, cfg.spatial_strides,
                                                        cfg.temporal_strides, cfg.inflate)):
            planes = base * 2 ** i
            layer = []
            for j in range(blocks):
                layer.append(Bottleneck3d(inplanes, planes, s if j == 0 else 1, t if j == 0 else 1, bool(inflate)))
                inplanes = planes * Bottleneck3d.expansion
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.out_channels = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.pool(self.stem(x)))


class PoseC3D(nn.Module):
    """``miga24-posec3d-*``: SlowOnly backbone and the (text-aligned) classification head."""

    input_names = ("heatmaps",)
    output_names = ("logits",)

    def __init__(self, config: PoseC3DConfig):
        super().__init__()
        self.config = config
        self.backbone = SlowOnly3d(config)
        self.dropout = nn.Dropout(config.dropout)
        width = self.backbone.out_channels
        if config.text_dim > 0:
            self.project = nn.Linear(width, config.text_dim)
            width = config.text_dim
        else:
            self.project = None
        self.fc = nn.Linear(width, config.num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        self.register_buffer("text_targets", torch.zeros(config.num_classes, max(config.text_dim, 1)))

    def set_text_targets(self, embeddings: Tensor) -> None:
        """The classes' text embeddings (C, text_dim), e.g. ``student.class_text_embeddings()``;
        they are normalised here and travel in the state dict."""
        cfg = self.config
        if self.project is None:
            raise MicrogestureError("this PoseC3D has no text alignment (text_dim 0): build it with text_dim > 0")
        if tuple(embeddings.shape) != (cfg.num_classes, cfg.text_dim):
            raise MicrogestureError(f"text targets must be (classes, text_dim) = ({cfg.num_classes}, "
                                    f"{cfg.text_dim}), got {tuple(embeddings.shape)}: use the class "
                                    "embeddings of an RGB student trained on the same classes")
        self.text_targets.copy_(F.normalize(embeddings.detach().float(), dim=-1))

    @property
    def has_text_targets(self) -> bool:
        """Whether text targets were set (normalised targets are never all zero)."""
        return bool(self.text_targets.abs().sum() > 0)

    def embed(self, heatmaps: Tensor) -> Tensor:
        """Heatmaps (B, C, T, H, W) -> the feature the classifier reads (B, text_dim or width)."""
        x = self.dropout(self.backbone(heatmaps).mean(dim=(2, 3, 4)))
        return self.project(x) if self.project is not None else x

    def forward(self, heatmaps: Tensor) -> Tensor:
        """Heatmaps (B, C, T, H, W) -> logits (B, classes)."""
        return self.fc(self.embed(heatmaps))

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``batch["heatmaps"]``, ``batch["label"]`` -> ``loss_ce`` and, with text targets,
        ``loss_text`` = gamma * mean squared distance to the class's text embedding (total: the sum)."""
        x = self.embed(batch["heatmaps"])
        label = batch["label"]
        terms = {"loss_ce": F.cross_entropy(self.fc(x), label)}
        if self.project is not None and self.config.text_weight > 0:
            if not self.has_text_targets:
                raise MicrogestureError("text-aligned PoseC3D needs its text targets: call set_text_targets("
                                        "student.class_text_embeddings()) with a trained RGB student first")
            distance = (x - self.text_targets[label]).square().sum(-1).mean()
            terms["loss_text"] = self.config.text_weight * distance
        return terms


def create_posec3d(config: PoseC3DConfig, seed: int | None = None) -> PoseC3D:
    """Build PoseC3D (random initialisation made reproducible by ``seed``)."""
    if seed is not None:
        torch.manual_seed(seed)
    return PoseC3D(config)
