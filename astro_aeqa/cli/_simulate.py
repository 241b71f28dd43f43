# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa simulate``: write simulated frames with their truth (placeholder, being built)."""


def register(subparsers):
    parser = subparsers.add_parser("simulate", help="write simulated FITS frames with truth")
    parser.set_defaults(func=run)
    return parser


def run(args):
    msg = "aeqa simulate is not built yet"
    raise NotImplementedError(msg)
