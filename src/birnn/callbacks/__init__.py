from birnn.callbacks.report import TrainingReport

__all__ = ["TrainingReport"]
