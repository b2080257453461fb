"""The dissertation in miniature: both chapters end to end on procedural worlds, on the CPU (docs/demo.md)."""
