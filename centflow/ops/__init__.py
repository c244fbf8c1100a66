"""Process plumbing, apart from the domain: the command line (`cli`), the worker
processes (`runner`, `cluster`), the local broker (`broker`), Kafka client
helpers (`kafka`), status files for the live display (`status`) and the
benchmark (`bench`). Nothing here decides what happens to money.
"""
