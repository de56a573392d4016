from imgaccel.cli import main

main()
