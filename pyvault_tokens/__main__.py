"""``python -m pyvault_tokens``: the pyvault-tokens command line."""

from pyvault_tokens.cli import main

if __name__ == "__main__":
    main(prog_name="pyvault-tokens")
