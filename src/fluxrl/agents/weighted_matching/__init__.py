"""Weighted matching: a diffusion / flow loss on actions weighted by how good they are (paper
Table 1)."""
