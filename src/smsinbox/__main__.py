from smsinbox.cli import main

main()
