"""ModelConfig presets and example runner configs, installed with the code that reads them."""
