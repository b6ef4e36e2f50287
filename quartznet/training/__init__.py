"""Training: the Lightning data module, model/trainer building and callbacks behind train.py."""
