"""Provides the review commands' logic, apart from their CLI: `plan` (what a run would do and why,
nothing executed), `sources` (the code diff behind a re-run), `compare` (two runs side by side) and
`debug` (a step of a past run re-executed under pdb)."""
