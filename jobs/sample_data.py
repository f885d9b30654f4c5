"""Generate the synthetic Sentinel-2 demo data (``earthloop sample-data``)."""

from earthloop.errors import exit_process
from earthloop.synth.entry import main

if __name__ == "__main__":
    exit_process(main())
