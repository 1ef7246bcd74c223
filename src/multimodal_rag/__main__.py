"""``python -m multimodal_rag``: the same command line as ``multimodal-rag``."""

from multimodal_rag.cli import main

if __name__ == "__main__":
    main()
