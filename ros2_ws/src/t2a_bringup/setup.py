from glob import glob

from setuptools import find_packages, setup

PACKAGE = "t2a_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*")),
        ("share/" + PACKAGE + "/launch", glob("launch/*")),
        ("share/" + PACKAGE + "/rviz", glob("rviz/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="Track2Act ROS 2 maintainers",
    maintainer_email="t2a@example.org",
    description="Track2Act bringup.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "t2a-doctor = t2a_bringup.doctor:main",
            "t2a-sim-goal = t2a_bringup.sim_goal:main",
            "t2a-snapshot-goal = t2a_bringup.snapshot_goal:main",
            "t2a-record = t2a_bringup.bag_record:main",
            "t2a-play = t2a_bringup.bag_play:main",
            "t2a-stack = t2a_bringup.stack_runner:main",
            "t2a-eval-bag = t2a_bringup.eval_bag:main",
            "t2a-demo = t2a_bringup.demo:main",
        ],
    },
)
