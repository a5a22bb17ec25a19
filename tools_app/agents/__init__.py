"""Amplifier agents: bundles, our provider, orchestrator and context modules, and the
runner the delegate tool (and the task machinery) calls."""
