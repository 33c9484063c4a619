"""Fuzzers for the decoders and converters: hypothesis strategies and raw byte mutation.

`targets` runs one input through what a receiver does with it (inflate, decode, convert) and
checks the oracle: only the documented error classes, payloads the sinks can store as they are.
`python -m tests.fuzz --help` runs the long fuzz sessions; tests/unit/fuzz runs a short one.
"""
