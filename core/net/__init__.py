"""The network: backbones (one registry: torchvision, EfficientNet-Lite0, timm), heads, and stages to cut at."""
