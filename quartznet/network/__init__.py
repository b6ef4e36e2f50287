"""The network: front ends, Jasper blocks, encoder, heads and feature augmentation. Plain PyTorch
modules that know nothing of Lightning, data loading or applications."""
