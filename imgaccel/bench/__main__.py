from imgaccel.bench.cli import main

main(prog_name="imgaccel-bench")
