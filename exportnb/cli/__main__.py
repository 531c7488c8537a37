from exportnb.cli import main

main()
