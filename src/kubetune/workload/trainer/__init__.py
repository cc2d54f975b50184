"""The Hugging Face Trainer as kubetune builds it: its arguments, the one `Trainer` subclass, and the callbacks added when it is built."""
