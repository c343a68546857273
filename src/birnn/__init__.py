from birnn.encoder import BiRNN

__all__ = ["BiRNN"]
