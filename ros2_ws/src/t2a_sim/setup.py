from glob import glob

from setuptools import find_packages, setup

PACKAGE = "t2a_sim"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*")),
        ("share/" + PACKAGE + "/launch", glob("launch/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="Track2Act ROS 2 maintainers",
    maintainer_email="t2a@example.org",
    description="Track2Act simulation.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "t2a_sim = t2a_sim.nodes.sim_node:main",
            "t2a_sim_state_publisher = t2a_sim.nodes.state_publisher:main",
        ],
    },
)
