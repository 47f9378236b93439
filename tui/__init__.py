"""wirepeek's front ends: the command line, the headless modes, and (soon) the Textual app."""
