"""Research tools from Lester et al. (2021): prompt export/import, nearest
neighbours, prompt ensembling, multi-task serving and ablation sweeps."""
