"""Benchmarks of hangupsms on generated AMI traffic: `python -m bench [--quick]`."""
