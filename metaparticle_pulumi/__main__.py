"""`python -m metaparticle_pulumi`: the `metaparticle` command."""

from ._cli import main

if __name__ == "__main__":
    main()
