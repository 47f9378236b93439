"""wirepeek's engine: capture sources, decoding, TCP reassembly and stream consumers.

Everything here except `engine.sources` is sans-IO: bytes and packet timestamps go in, events
come out. Nothing in this package may import textual or rich (a test enforces it), start a
thread, or read the wall clock.
"""
