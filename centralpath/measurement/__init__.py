"""Measuring networks with the theory's yardstick: features and statistics files, streamed class
statistics, recorders used while training, `analyze` (the metrics per checkpoint), `compare`
(fitting the theory to a run) and prediction (does the theory predict a network?).

The public names are re-exported by `centralpath`; the PyTorch recorder is `centralpath.torch`.
Submodules: `analysis`, `compare`, `predictive`, `torch_recorder`.
"""
