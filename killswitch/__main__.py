from killswitch.cli import main

main()
