"""``python -m gaitgl_lightning``: the Hydra command line (see ``gaitgl_lightning.cli``)."""

from gaitgl_lightning.cli import main

if __name__ == "__main__":
    main()
