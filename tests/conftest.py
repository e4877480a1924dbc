"""Test-wide settings: no GPU, no network, tiny everything."""

import os

# Set before torch / huggingface_hub are imported: tests never see a GPU and never
# try the network (a download attempt fails at once instead of retrying).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")
