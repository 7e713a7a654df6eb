"""pytest-benchmark suites. The test command runs each body once (--benchmark-disable);
the main job (`make review`) times them and writes build/benchmarks/<suite>.json."""
