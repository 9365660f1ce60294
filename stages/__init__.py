"""DVC stage entry points and the file IO around `ml/`: paths come from dvc.yaml, params from params.yaml."""
