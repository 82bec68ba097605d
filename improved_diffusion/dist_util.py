"""Upstream's `improved_diffusion.dist_util`, kept for scripts written against upstream.

The helpers live in melcore.dist_util (the diffusion trainer and the vocoder trainer share them).
"""

from melcore.dist_util import (  # noqa: F401
    barrier,
    broadcast_object,
    cleanup,
    dev,
    get_rank,
    get_world_size,
    is_main,
    launched_by_mpi,
    launched_by_torchrun,
    load_state_dict,
    setup_dist,
    sync_params,
)
