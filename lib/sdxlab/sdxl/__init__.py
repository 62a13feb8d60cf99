"""SDXL pipelines built in code rather than loaded: `random_weights.build_random_sdxl`, SDXL-base-1.0's exact
architecture with random weights, for the speed and memory benchmarks (`bench/`, `bench/gpu_check.py`).

Loading (hub ids, folders, single files) and the tiny offline model are in `sdxlab.models`; both read the
architecture kept in the package (`sdxlab.models.load_architecture`).
"""
