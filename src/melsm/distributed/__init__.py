"""Fits of data held by a Dask cluster: a Parquet data set or a Dask DataFrame partitioned
by group (docs/architecture.md, 'Data on a cluster').

``source`` opens and checks the data; ``partitions`` builds each partition's design on the
workers and sums the summaries the units and the starting values need; ``remote`` lays
each partition out in blocks there and evaluates log L and its gradient for the
optimiser, which runs on the client. ``melsm.Model(data=path_or_dask_frame)`` uses them.
"""
