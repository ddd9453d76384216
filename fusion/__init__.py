"""The BEV fusion network: config, batching, branches, fuser, backbone, head, losses, decode, training."""
