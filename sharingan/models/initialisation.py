"""Initial weights of the depth networks as in the official SharinGAN code (docs/ref-sharingan.md §1.1-1.3).

The official generator G and task network T are built by T2Net's `define_G(..., init_type='kaiming')`, whose
`init_weights` visits every module and sets

- convolutions (transposed ones included) and linear layers: weight ~ Kaiming normal, fan_in mode, gain √2
  (`kaiming_normal_(w, a=0, mode='fan_in')`: std = sqrt(2 / fan_in), where PyTorch's fan_in of a transposed
  convolution is out_channels x kernel area, as in the official call); bias = 0;
- BatchNorm2d: weight ~ U(0.02, 1) (`uniform_(w, 1.0, 0.02)`, which PyTorch 0.4 read as the interval
  [0.02, 1]; mean 0.51); bias = 0.

The shared PReLU keeps its slope 0.25. The critic D (`da_net.Discriminator`) gets no `init_weights`: it has
PyTorch 0.4.1's defaults (the official environment), which equal today's for convolutions and linear layers
(uniform ±1/sqrt(fan_in) for weight and bias) but drew batch-norm weights from U(0, 1) instead of setting
them to 1; :func:`initialise_critic` restores that.

The pipeline pretrains G (reconstruction loss) and T (synthetic supervision) itself (dissertation §2.3.1.2),
and the "All real" row of Tables 2.1/2.5 trains T from its initial weights, so the initialisation is part of
what is reproduced.
"""

from __future__ import annotations

from torch import nn

KAIMING_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                  nn.Linear)
BATCH_NORM_SCALE_RANGE = (0.02, 1.0)


def initialise_like_t2net(network: nn.Module) -> nn.Module:
    """T2Net's `init_weights(net, 'kaiming')` (official G and T); returns `network`."""
    for module in network.modules():
        if isinstance(module, KAIMING_LAYERS):
            nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d) and module.affine:
            nn.init.uniform_(module.weight, *BATCH_NORM_SCALE_RANGE)
            nn.init.zeros_(module.bias)
    return network


def initialise_critic(network: nn.Module) -> nn.Module:
    """The official critic's initial weights: PyTorch 0.4.1 defaults (batch-norm weight ~ U(0, 1), bias 0;
    convolutions and linear layers keep PyTorch's default, the same distribution as in 0.4.1)."""
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.uniform_(module.weight, 0.0, 1.0)
            nn.init.zeros_(module.bias)
    return network
