"""Model factory: torchvision/timm architectures with small-input stems, and the CIFAR ResNets."""
from .cifar_resnet import CIFAR_RESNET_DEPTHS, CifarResNet, cifar_resnet
from .factory import (
    PAPER_MODELS,
    adapt_small_input_stem,
    available_models,
    count_parameters,
    create_model,
    xavier_init_,
)

__all__ = ["create_model", "available_models", "adapt_small_input_stem", "xavier_init_", "count_parameters",
           "CifarResNet", "cifar_resnet", "CIFAR_RESNET_DEPTHS", "PAPER_MODELS"]
