"""Fast xlsx writing: xlsxwriter lays out the package, Arrow string kernels write the cells and comments."""
