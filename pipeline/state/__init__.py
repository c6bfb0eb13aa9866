"""What one machine remembers between runs: the submission journal and the run lock.

Both live in the state directory (:attr:`pipeline.config.Settings.state_dir`)
and are shared by every command and process that uses it.
"""
