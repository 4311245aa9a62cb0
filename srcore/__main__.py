from srcore.cli import main

main()
