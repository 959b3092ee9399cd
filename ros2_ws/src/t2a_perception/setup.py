from glob import glob

from setuptools import find_packages, setup

PACKAGE = "t2a_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*")),
        ("share/" + PACKAGE + "/launch", glob("launch/*")),
        ("share/" + PACKAGE + "/models/track_default", glob("models/track_default/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="Track2Act ROS 2 maintainers",
    maintainer_email="t2a@example.org",
    description="Track2Act perception.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "track_predictor = t2a_perception.nodes.track_predictor:main",
            "t2a-send-goal = t2a_perception.send_goal:main",
        ],
    },
)
