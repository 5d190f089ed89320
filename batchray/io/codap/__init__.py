"""CODAP documents: reading v2/v3 ``.codap`` files into plans and writing them back."""
