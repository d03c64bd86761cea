"""`python -m food_assets.cli`: the same as `food-assets`."""

from food_assets.cli import main

main()
