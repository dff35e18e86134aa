"""Rule plot_leaderboard: the leaderboard as a heat map (mean ± sd per model and protocol,
the best of each column framed)."""

import pandas as pd

from dnalm import heatmap, logs, report

log = logs.to_file(snakemake.log[0])
board = pd.read_csv(snakemake.input.leaderboard, sep="\t", keep_default_na=False, na_values=[""])
columns = report.headline_columns(pd.read_csv(snakemake.input.metrics, sep="\t", keep_default_na=False,
                                              na_values=[""]))  # fmt: skip
heatmap.plot_leaderboard(board, [(c.key, c.label) for c in columns], snakemake.output[0])
log.info("leaderboard figure: %d models x %d columns", len(board), len(columns))
