"""Scripts and functions the sample flows `yaml_pipeline.yaml` and `mixed_steps.py` call."""
