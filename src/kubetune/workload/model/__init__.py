"""The model a run trains: where it comes from, downloading it once, which weights train (freezing, LoRA), the speed settings, devices and loading for inference."""
