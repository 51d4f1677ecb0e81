"""Config adjustments shared by the command-line tools."""
import torch
from mmengine.config import Config


def prepare_config(cfg: Config) -> Config:
    """Make a config runnable on the machine at hand.

    * Without a CUDA device the distributed backend becomes ``gloo`` (NCCL
      needs GPUs), so ``tools/dist_train.sh CONFIG 2`` works on a CPU box.
    """
    if not torch.cuda.is_available():
        env_cfg = cfg.setdefault('env_cfg', {})
        dist_cfg = env_cfg.setdefault('dist_cfg', {})
        if dist_cfg.get('backend', 'nccl') == 'nccl':
            dist_cfg['backend'] = 'gloo'
    return cfg
